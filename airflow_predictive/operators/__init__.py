"""Operators of the provider: the predictive KubernetesPodOperator."""
