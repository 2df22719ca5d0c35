"""Azure ML submission (azure-ai-ml v2): plan the job, stage its image, talk to the workspace.

- ``plan``: the ``aml:`` settings and the SDK's compute, environment and job, built offline;
  the dry run's YAML.
- ``image``: an image's Docker build context, with a wheel of this simgym in it.
- ``workspace``: credentials, the ``MLClient``, cluster and environment, submit, status, logs.
- ``errors``: ``AmlError`` and the SDK import check.

``azure-ai-ml`` is the ``aml`` extra and imported lazily.
"""
