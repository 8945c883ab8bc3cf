"""Agents as Ray actors: the step loop, session context and delegation."""
