"""The learner process: metric rows into the time-series store, online models, scores back."""
