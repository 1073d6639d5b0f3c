"""The tests, in folders that mirror the package; as packages, so one test file name may appear in two folders."""
