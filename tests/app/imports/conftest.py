from tests.app.exports.conftest import seed  # noqa: F401  (rows through the ORM, as the export tests make them)
