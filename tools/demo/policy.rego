# The data owner's pod policy for the demo (Rego v1, kata-agent's agent_policy package).
# Only the container named "web" may be started; nobody may exec into a container.
package agent_policy

default StartContainerRequest := false

StartContainerRequest if {
	print("StartContainerRequest: container", input.container_id, "is not on the data owner's list")
	input.container_id == "web"
}

default ExecProcessRequest := false

ExecProcessRequest if {
	print("ExecProcessRequest: the data owner allows no exec into containers")
	false
}

default RemoveContainerRequest := true
