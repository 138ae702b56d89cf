"""GLIDE training pipeline: data, models, diffusion, training, sampling and evaluation."""
