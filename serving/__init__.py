"""Serving side of augment: a FastAPI app over the torch-free generator, on uvicorn or Ray Serve."""
