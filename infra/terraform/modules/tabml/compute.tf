# The policy every job cluster of the step launcher is created under: job clusters only, the
# profile's runtime, either an allow-list of node types or the deployment's instance pool, a
# worker cap, and single-user access as the runner so Unity Catalog volumes and models are
# reachable from the remote steps.

resource "databricks_instance_pool" "job_clusters" {
  count                                 = var.instance_pool == null ? 0 : 1
  instance_pool_name                    = var.instance_pool.name
  node_type_id                          = var.instance_pool.node_type_id
  min_idle_instances                    = var.instance_pool.min_idle_instances
  max_capacity                          = var.instance_pool.max_capacity
  idle_instance_autotermination_minutes = var.instance_pool.idle_minutes
  preloaded_spark_versions              = [var.spark_version]
  custom_tags                           = merge(var.tags, { project = "tabml", deployment = var.deployment })
}

locals {
  instance_pool_id = one(databricks_instance_pool.job_clusters[*].id)

  common_rules = merge(
    {
      "cluster_type"           = { type = "fixed", value = "job" }
      "spark_version"          = { type = "fixed", value = var.spark_version }
      "autoscale.min_workers"  = { type = "range", minValue = 0, maxValue = var.max_workers, defaultValue = 1 }
      "autoscale.max_workers"  = { type = "range", minValue = 1, maxValue = var.max_workers, defaultValue = var.max_workers }
      "num_workers"            = { type = "range", minValue = 0, maxValue = var.max_workers, isOptional = true }
      "data_security_mode"     = { type = "fixed", value = "SINGLE_USER" }
      "single_user_name"       = { type = "fixed", value = databricks_service_principal.runner.application_id }
      "custom_tags.project"    = { type = "fixed", value = "tabml" }
      "custom_tags.deployment" = { type = "fixed", value = var.deployment }
    },
    { for key, value in var.tags : "custom_tags.${key}" => { type = "fixed", value = value } },
  )
  # Pool clusters take their node type from the pool, so the two rule sets never mix.
  node_type_rules = {
    "node_type_id"        = { type = "allowlist", values = var.node_type_ids, defaultValue = var.node_type_ids[0] }
    "driver_node_type_id" = { type = "allowlist", values = var.node_type_ids, isOptional = true }
  }
  pool_rules = {
    "instance_pool_id"        = { type = "fixed", value = local.instance_pool_id }
    "driver_instance_pool_id" = { type = "fixed", value = local.instance_pool_id, hidden = true }
  }
}

resource "databricks_cluster_policy" "job_clusters" {
  name        = "tabml-${var.deployment}-job-clusters"
  description = "Job clusters of the tabml ${var.deployment} step launcher."
  # The two rule sets are objects of different shapes, which a conditional cannot return
  # directly; as JSON strings they can.
  definition = jsonencode(merge(
    local.common_rules,
    jsondecode(var.instance_pool == null ? jsonencode(local.node_type_rules) : jsonencode(local.pool_rules)),
  ))
}
