output "storage_root" {
  description = "The asset storage path, to compare with the profile's storage.root."
  value       = "/Volumes/${local.catalog_name}/${databricks_schema.ml.name}/${var.asset_volume_name}"
}

output "volume_paths" {
  description = "Every managed volume as a /Volumes path."
  value       = { for name, volume in databricks_volume.tabml : name => "/Volumes/${volume.catalog_name}/${volume.schema_name}/${volume.name}" }
}

output "registered_model_full_names" {
  description = "Project -> catalog.schema.model, the profile's mlflow.model_name for that project."
  value       = { for project, model in databricks_registered_model.tabml : project => "${local.catalog_name}.${databricks_schema.ml.name}.${model.name}" }
}

output "experiment_ids" {
  description = "Project -> the id of its MLflow experiment."
  value       = { for project, experiment in databricks_mlflow_experiment.tabml : project => experiment.id }
}

output "secret_scope" {
  description = "The secret scope the deploy workflow writes values into."
  value       = databricks_secret_scope.tabml.name
}

output "job_cluster_policy_id" {
  description = "Policy id for the step launcher's new job clusters."
  value       = databricks_cluster_policy.job_clusters.id
}

output "runner_application_id" {
  description = "Application id of the runner service principal (its token is a GitHub environment secret)."
  value       = databricks_service_principal.runner.application_id
}

output "instance_pool_id" {
  description = "Id of the job clusters' instance pool (null without one): the profile's databricks.cluster.instance_pool_id."
  value       = local.instance_pool_id
}
