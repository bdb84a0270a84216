"""Post-processing: upscalers, face restoration, watermark."""
