"""The cluster side: `hostos serve`, its store, the rollout planner and the node agent."""
