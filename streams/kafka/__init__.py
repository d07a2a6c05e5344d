"""Everything that talks to Kafka as a client: how clients are built, and the bridge to Faust's."""
