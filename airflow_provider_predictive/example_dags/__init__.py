"""The provider's example DAGs and its maintenance DAG, loaded by Airflow as the bundle
``airflow-provider-predictive-example-dags`` when ``[core] load_examples`` is on (``dags/`` of the
repo holds one-import files for a DAGs folder when it is off)."""
