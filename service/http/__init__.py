"""The HTTP layer: the FastAPI app, its routes and middleware, the uvicorn protocol, body parsing and
the browser pages. Routes parse the wire format and call the serving layer (``service.runtime``)."""
