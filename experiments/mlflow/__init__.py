"""An MLflow-compatible REST subset under /mlflow, so code that already reports to MLflow
(mlflow.log_metric, a Hugging Face Trainer with report_to="mlflow") reports to finetune_hub
unchanged: MLFLOW_TRACKING_URI=http://<host>/mlflow and MLFLOW_TRACKING_TOKEN=<api token>.

The tracking URI picks the team: /mlflow serves the token user's only team;
/mlflow/teams/<id> one team of a user who is in several. Experiments are the team's
experiments (made as tracked projects by experiments/create), runs its runs, queued ones
included: the rules are experiments.tracked's, the same as the native tracked-run API.

protocol: MLflow's request and response shapes and its error responses; search: runs/search
and experiments/search (filter, order_by, paging); artifacts: the mlflow-artifacts calls;
views: the HTTP handlers; urls: their routes. The adapter works over the tracked-run services
(experiments.tracked, metric_store, selectors), never over experiments.training."""
