"""fedml_bridge"""
