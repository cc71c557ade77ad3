# Databricks resources of the prod deployment. Every name here must agree with
# tabml_assets/conf/profiles/prod.yaml; tabml_assets_tests/test_infra.py parses this file and checks.
module "tabml" {
  source = "../modules/tabml"

  deployment = "prod"

  # storage.root, storage.artifacts and databricks.wheel_path: /Volumes/tabml_prod/ml/<volume>/...
  catalog_name         = "tabml_prod"
  create_catalog       = var.create_catalog
  catalog_storage_root = var.catalog_storage_root
  schema_name          = "ml"
  volume_names         = ["assets", "artifacts", "wheels"]
  asset_volume_name    = "assets"

  # The profile's projects (each pipeline.yaml's name), with mlflow.experiment_name
  # (/Shared/tabml-prod/<project>) and mlflow.model_name (tabml_prod.ml.<project>).
  projects          = ["nyc_taxi"]
  experiment_folder = "/Shared/tabml-prod"

  # databricks.secret_scope
  secret_scope = "tabml-prod"

  # databricks.cluster
  spark_version = "15.4.x-scala2.12"
  node_type_ids = ["i3.2xlarge"]
  max_workers   = 8
  # databricks.cluster.instance_pool_id: prod clusters start from a warm pool.
  instance_pool = {
    name               = "tabml-prod-pool"
    node_type_id       = "i3.2xlarge"
    min_idle_instances = 0
    max_capacity       = 20
    idle_minutes       = 15
  }

  runner_display_name = "tabml-prod-runner"
  deployer_group      = var.deployer_group
  scoring_principals  = var.scoring_principals
  tags                = {}
}
