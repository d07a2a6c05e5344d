"""The worker's hot path: records in (signals, ticks, commands, configuration), state changes and
outputs out, with window closing, idle-agent expiry and the durability protocol that orders them."""
