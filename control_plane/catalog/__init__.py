"""The catalog: the documents users register (tools, workflows), decoded and validated once, resolved by
``name[@version]`` and cached."""
