"""The training job: TabNet on labelled transactions, evaluated, tracked in MLflow, bundled for serving."""
