"""The Voila dashboards: a prediction form, model monitoring and a job board, all clients of the API.

Each notebook in `notebooks/dashboards/` is one call, e.g. `from dashboards.forms import prediction_form;
prediction_form()`; the logic lives here, where it is tested. Everything goes through the platform API
(`dashboards.client`) with the key of DASHBOARD_API_KEY; nothing reads the databases directly.

    settings   DASHBOARD_* settings (pydantic-settings)
    client     PlatformClient: the HTTP client of the API, errors as ApiError
    drift      PSI per feature, numeric and categorical (numpy and pandas only, no widgets)
    reference  the training data and the model's features as typed input specs
    widgets    shared HTML, banners and matplotlib-PNG plot helpers
    forms      the prediction form;  monitoring  the monitoring page;  job_board  the job board

This package imports nothing from `serve` or the workers, and neither imports it.
"""
