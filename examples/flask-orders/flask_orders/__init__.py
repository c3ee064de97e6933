"""flask-orders: an orders service that emits OrderCreated through the outbox, and a billing
consumer that charges each order exactly once. See ../README.md."""
