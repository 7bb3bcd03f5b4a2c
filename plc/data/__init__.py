"""Text sources, tokenizers, the Zarr token store and batch sampling."""
