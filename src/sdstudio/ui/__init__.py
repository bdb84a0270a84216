"""The Gradio web UI, one module per tab."""
