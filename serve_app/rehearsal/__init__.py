"""The deployment rehearsal: ``serve-app kuberay rehearse`` runs kuberay/rayservice.yaml on this machine as its
pods would run, then checks what the RayService's health checks and a client would (see run.py)."""
