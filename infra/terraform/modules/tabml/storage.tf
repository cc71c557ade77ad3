# Unity Catalog storage for one tabml deployment: the catalog, the schema and the managed
# volumes that the profile's storage.root, storage.artifacts and databricks.wheel_path point into.

resource "databricks_catalog" "tabml" {
  count        = var.create_catalog ? 1 : 0
  name         = var.catalog_name
  storage_root = var.catalog_storage_root
  comment      = "tabml ${var.deployment}: asset storage, MLflow artifacts and registered models."
  properties = {
    project    = "tabml"
    deployment = var.deployment
  }
}

locals {
  # Referencing the created catalog orders the schema after it; an existing catalog is used by name.
  catalog_name = var.create_catalog ? databricks_catalog.tabml[0].name : var.catalog_name
}

resource "databricks_schema" "ml" {
  catalog_name = local.catalog_name
  name         = var.schema_name
  comment      = "tabml ${var.deployment}: volumes for assets, artifacts and wheels, and each project's model."
}

resource "databricks_volume" "tabml" {
  for_each     = toset(var.volume_names)
  catalog_name = local.catalog_name
  schema_name  = databricks_schema.ml.name
  name         = each.key
  volume_type  = "MANAGED"
  comment      = "tabml ${var.deployment}: /Volumes/${var.catalog_name}/${var.schema_name}/${each.key}"
}
