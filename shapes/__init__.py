"""The REST API's request and response shapes, one module per resource; ``schemas`` re-exports them."""
