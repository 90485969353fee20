"""The delivery core: submissions and deliveries, the state machine, the queue and its worker, the
`DeliveryAgent` protocol, routing, retraction and the receipts outbox. It imports no route and no edge."""
