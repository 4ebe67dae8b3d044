"""pipeline/embedding"""
