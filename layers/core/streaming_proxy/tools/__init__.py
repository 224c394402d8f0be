"""The tool loop: frontend (`ui_`) tools answered by browsers, backend tools by webhook."""
