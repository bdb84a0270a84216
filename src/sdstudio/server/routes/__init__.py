"""The A1111 API's routers, one module per resource; `create_api` mounts them under /sdapi/v1."""
