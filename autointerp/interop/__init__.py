"""Interchange with other tools: explanations made elsewhere in, and run exports out (Neuronpedia, Hugging
Face datasets, SAEBench, delphi)."""
