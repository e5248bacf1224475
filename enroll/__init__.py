"""Continual enrolment: a durable gallery, one-shot identify/verify and warm-start updates."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
