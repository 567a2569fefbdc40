"""Training: the train state, the jitted steps of the three phases, the run loop."""
