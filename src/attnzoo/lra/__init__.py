"""Long Range Arena: data, training and the report."""
