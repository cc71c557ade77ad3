# Who may do what. The runner is the service principal that the Dagster code location and its
# job clusters act as: it trains, registers, promotes and scores. The deployer group (the CI
# identity) manages every resource; scoring principals may only load the model and read assets.

resource "databricks_service_principal" "runner" {
  display_name         = var.runner_display_name
  allow_cluster_create = false
}

resource "databricks_permissions" "job_cluster_policy" {
  cluster_policy_id = databricks_cluster_policy.job_clusters.id
  access_control {
    service_principal_name = databricks_service_principal.runner.application_id
    permission_level       = "CAN_USE"
  }
  access_control {
    group_name       = var.deployer_group
    permission_level = "CAN_USE"
  }
}

resource "databricks_permissions" "experiment" {
  for_each      = databricks_mlflow_experiment.tabml
  experiment_id = each.value.id
  access_control {
    group_name       = var.deployer_group
    permission_level = "CAN_MANAGE"
  }
  access_control {
    service_principal_name = databricks_service_principal.runner.application_id
    permission_level       = "CAN_EDIT"
  }
  dynamic "access_control" {
    for_each = toset(var.scoring_principals)
    content {
      group_name       = access_control.value
      permission_level = "CAN_READ"
    }
  }
}

# The catalog may be shared with other projects, so its grants are added per principal
# (databricks_grant) rather than replacing the catalog's whole grant list.
resource "databricks_grant" "catalog" {
  # Keys are known at plan time; the runner's application id is not until it exists.
  for_each = merge(
    { deployer = var.deployer_group, runner = databricks_service_principal.runner.application_id },
    { for principal in var.scoring_principals : "scoring:${principal}" => principal },
  )
  catalog    = local.catalog_name
  principal  = each.value
  privileges = ["USE_CATALOG"]
}

# Objects created here are owned by this code: their grant lists are authoritative.
resource "databricks_grants" "schema" {
  schema = databricks_schema.ml.id
  grant {
    principal  = var.deployer_group
    privileges = ["ALL_PRIVILEGES", "MANAGE"]
  }
  grant {
    principal  = databricks_service_principal.runner.application_id
    privileges = ["USE_SCHEMA"]
  }
  dynamic "grant" {
    for_each = toset(var.scoring_principals)
    content {
      principal  = grant.value
      privileges = ["USE_SCHEMA"]
    }
  }
}

resource "databricks_grants" "volume" {
  for_each = databricks_volume.tabml
  volume   = each.value.id
  grant {
    principal  = var.deployer_group
    privileges = ["ALL_PRIVILEGES", "MANAGE"]
  }
  grant {
    principal  = databricks_service_principal.runner.application_id
    privileges = ["READ_VOLUME", "WRITE_VOLUME"]
  }
  # Scoring consumers read batch_predictions from the asset volume, nothing else.
  dynamic "grant" {
    for_each = each.key == var.asset_volume_name ? toset(var.scoring_principals) : toset([])
    content {
      principal  = grant.value
      privileges = ["READ_VOLUME"]
    }
  }
}

resource "databricks_grants" "registered_model" {
  for_each = databricks_registered_model.tabml
  model    = each.value.id
  grant {
    principal  = var.deployer_group
    privileges = ["ALL_PRIVILEGES", "MANAGE"]
  }
  dynamic "grant" {
    for_each = toset(var.scoring_principals)
    content {
      principal  = grant.value
      privileges = ["EXECUTE"]
    }
  }
}

resource "databricks_permissions" "instance_pool" {
  count            = var.instance_pool == null ? 0 : 1
  instance_pool_id = local.instance_pool_id
  access_control {
    service_principal_name = databricks_service_principal.runner.application_id
    permission_level       = "CAN_ATTACH_TO"
  }
  access_control {
    group_name       = var.deployer_group
    permission_level = "CAN_MANAGE"
  }
}
