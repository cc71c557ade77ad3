# Databricks resources of the staging deployment. Every name here must agree with
# tabml_assets/conf/profiles/staging.yaml; tabml_assets_tests/test_infra.py parses this file and checks.
module "tabml" {
  source = "../modules/tabml"

  deployment = "staging"

  # storage.root, storage.artifacts and databricks.wheel_path: /Volumes/tabml_staging/ml/<volume>/...
  catalog_name         = "tabml_staging"
  create_catalog       = var.create_catalog
  catalog_storage_root = var.catalog_storage_root
  schema_name          = "ml"
  volume_names         = ["assets", "artifacts", "wheels"]
  asset_volume_name    = "assets"

  # The profile's projects (each pipeline.yaml's name), with mlflow.experiment_name
  # (/Shared/tabml-staging/<project>) and mlflow.model_name (tabml_staging.ml.<project>).
  projects          = ["nyc_taxi"]
  experiment_folder = "/Shared/tabml-staging"

  # databricks.secret_scope
  secret_scope = "tabml-staging"

  # databricks.cluster
  spark_version = "15.4.x-scala2.12"
  node_type_ids = ["i3.xlarge"]
  max_workers   = 4

  runner_display_name = "tabml-staging-runner"
  deployer_group      = var.deployer_group
  scoring_principals  = var.scoring_principals
  tags                = {}
}
