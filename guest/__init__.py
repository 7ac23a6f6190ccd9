"""Policy agent for the pod VM: a ttrpc proxy in front of kata-agent enforcing genpolicy Rego rules."""
