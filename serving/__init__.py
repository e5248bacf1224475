"""TF-Serving export (versioned SavedModels with embed / identify signatures) and clients."""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
