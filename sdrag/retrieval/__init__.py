"""Style retrieval: CLIP embeddings, the ChromaDB store a library lives in, the style library and its ingest."""
