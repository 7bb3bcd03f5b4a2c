"""Hugging Face causal LMs as the model under study (issue 32).

- `source`: `hf:ID_OR_PATH[@REVISION]` → a local folder (a model folder, a folder per revision, or
  the Hugging Face cache, offline when HF_HUB_OFFLINE is set); torch-free.
- `families`: what plc needs to know of each supported architecture (where its MLP units and
  attention are, its initialisation rule); torch-free.
- `config`: `HFConfig`, the architecture a plc checkpoint of such a model records; torch-free.
- `adapter`: `HFModel`, the adapter around `AutoModelForCausalLM` behind plc's model interface
  (plc.model's docstring), and the import from / export to a Hugging Face folder.

Only the adapter imports torch and transformers (≈ 10 s): `plc --help` never reaches it.
"""
