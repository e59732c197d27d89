"""Doc fragment for modules that drive the installed credroam agent on the managed host."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  agent_path:
    description:
      - The installed agent on the managed host. The module runs it as root; the agent drops
        to each user itself (C(--user)), as the PAM hook and the timer run it.
    type: path
    default: /usr/bin/credroam-agent
  agent_config:
    description: The agent's configuration file. Defaults to the agent's own default.
    type: path
"""
