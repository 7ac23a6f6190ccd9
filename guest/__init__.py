"""Policy agent for the pod VM: a ttrpc proxy in front of kata-agent that enforces the genpolicy Rego rules."""
