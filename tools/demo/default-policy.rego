# The image's default policy (kata's allow-all): in force until the measured initdata replaces it.
package agent_policy

default StartContainerRequest := true

default ExecProcessRequest := true

default RemoveContainerRequest := true
