# MLflow on Databricks, one of each per project the deployment runs: the experiment that the
# project's trained_model logs to and the Unity Catalog registered model whose @champion alias
# its batch_predictions loads.

# Databricks creates an experiment only inside an existing workspace folder.
resource "databricks_directory" "experiments" {
  path = var.experiment_folder
}

resource "databricks_mlflow_experiment" "tabml" {
  for_each    = toset(var.projects)
  name        = "${databricks_directory.experiments.path}/${each.key}"
  description = "tabml ${var.deployment} ${each.key}: one run per trained_model partition."
}

resource "databricks_registered_model" "tabml" {
  for_each     = toset(var.projects)
  catalog_name = local.catalog_name
  schema_name  = databricks_schema.ml.name
  name         = each.key
  comment      = "tabml ${var.deployment} ${each.key}: aliases challenger and champion are moved by the Dagster assets."
  # Unity Catalog lets only the owner create versions and move aliases, and the runner
  # does both (trained_model registers, champion_model promotes).
  owner = databricks_service_principal.runner.application_id
}
