"""Continual enrolment: a durable gallery, one-shot identify/verify and warm-start updates."""
import trainer  # noqa: F401  (the TensorFlow environment's one owner: tf-keras, oneDNN; before TensorFlow loads)
