"""The bundled web viewer (OHIF): its deploy step and its generated configuration."""
