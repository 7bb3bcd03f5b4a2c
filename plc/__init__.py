"""plc: measure loss of plasticity in GPT-style language models.

Importing `plc` is cheap (no torch); the submodules carry the work:
`plc.model`, `plc.data`, `plc.train`, `plc.probe`, `plc.measures`, `plc.diagnose`, `plc.onset`,
`plc.plot`.
"""

__version__ = "0.1.0"
