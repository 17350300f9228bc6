"""Triggers of the provider (run in Airflow's triggerer): in-flight shaping of pods."""
