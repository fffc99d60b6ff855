# The Google Cloud side of cdcflow's access control (deploy/access/README.md): a service account per
# component with least-privilege roles, bound to its Kubernetes service account through Workload Identity.
terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.0, < 8.0"
    }
  }
}
