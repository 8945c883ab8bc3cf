"""Model backends behind one Model protocol, and the router that picks one per step."""
