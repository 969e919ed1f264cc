"""Generator backends: diffusers (and its tiny offline variant) and the OpenAI images API."""
