"""The HIN route: the PGP/MIME message, the choice of key, the pinned recipient keys. A `DeliveryAgent`."""
