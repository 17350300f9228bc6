"""The provider's example DAGs, loaded by Airflow as the bundle
``airflow-provider-predictive-example-dags`` when ``[core] load_examples`` is on."""
