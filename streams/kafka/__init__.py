"""Everything that talks to Kafka: how clients are built (and the bridge to Faust's), topic names
and their administration, confirmed delivery, and whether the broker answers."""
