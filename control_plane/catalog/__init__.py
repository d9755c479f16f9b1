"""The catalog: the documents users register (tools, workflows, agents), decoded and validated once, resolved
by ``name[@version]`` and cached."""
